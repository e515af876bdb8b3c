"""Corpora readers, pair generators and the PairDataModule."""

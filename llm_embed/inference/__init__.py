"""Using a model once it exists.

- ``load``: the one ``--model`` loader and the encoder description file it reads and writes.
- ``export_folder``: the export folder (plain Hugging Face + sentence-transformers) and its loader.
- ``st_module``: the sentence-transformers module that runs llm-embed's Encoder.
- ``st_encoder``: a sentence-transformers model behind the Encoder's ``encode`` contract.
- ``embed_file``: embedding a text or JSONL file in resumable chunks.
"""

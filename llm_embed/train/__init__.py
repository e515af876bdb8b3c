"""What training needs beyond the LightningModule: GradCache, cross-device negatives, exact resume, the fit launcher."""

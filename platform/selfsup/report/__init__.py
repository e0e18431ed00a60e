"""Selection analysis over a finished sweep, read back from MLflow."""

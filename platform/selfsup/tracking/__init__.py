"""MLflow: experiment/run layout, params, metrics, artifacts (the only package that imports MLflow)."""

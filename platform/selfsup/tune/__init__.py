"""Label-free hyperparameter search: search spaces, Tuner with OptunaSearch and ASHA, resume."""

"""Label-free metrics and label-based probes (plain PyTorch/NumPy/scikit-learn)."""

LABEL_FREE = ("label_free/rankme", "label_free/rankme_projector", "label_free/alpha_req", "label_free/lidar")
"""The label-free metrics of every run (DESIGN.md's names); masked methods add ``label_free/lidar_aug``."""
LIDAR_AUG = "label_free/lidar_aug"
PROBES = ("probe/linear_acc", "probe/knn_acc")
"""The label-based probes of a run whose data has labels."""

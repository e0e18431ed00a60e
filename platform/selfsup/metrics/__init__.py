"""Label-free metrics and label-based probes (plain PyTorch/NumPy/scikit-learn)."""

LABEL_FREE = ("label_free/rankme", "label_free/rankme_projector", "label_free/alpha_req", "label_free/lidar", "label_free/aug_consistency",
              "label_free/twonn_id", "label_free/mst_id", "label_free/cluster_learnability")
"""The label-free metrics of every run (DESIGN.md's names; LiDAR and augmentation consistency where
``eval.lidar_samples`` is not 0); masked methods add ``label_free/lidar_aug``, token encoders
``label_free/dse``."""
LIDAR_AUG = "label_free/lidar_aug"
PROBES = ("probe/linear_acc", "probe/knn_acc")
"""The label-based probes of a run whose data has labels."""

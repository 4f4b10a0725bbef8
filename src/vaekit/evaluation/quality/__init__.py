"""Sample quality in a named feature space: shipped feature networks (nets), metrics, and scoring a model."""

from vaekit.evaluation.quality.nets import FEATURE_NETS, FeatureNet, feature_net_for, load_feature_net
from vaekit.evaluation.quality.score import QualityResult, SetScores, quality

__all__ = ["FEATURE_NETS", "FeatureNet", "QualityResult", "SetScores", "feature_net_for", "load_feature_net",
           "quality"]

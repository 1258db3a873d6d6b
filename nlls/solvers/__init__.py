"""The methods. Each file holds one method: its options, its state and its step."""

from .dogleg import Dogleg
from .gauss_newton import GaussNewton
from .levenberg_marquardt import LevenbergMarquardt
from .trust_region import TrustRegion

__all__ = ["Dogleg", "GaussNewton", "LevenbergMarquardt", "TrustRegion"]

"""The methods. Each file holds one method: its options, its state and its step."""

from .dogleg import Dogleg
from .gauss_newton import GaussNewton
from .levenberg_marquardt import LevenbergMarquardt

__all__ = ["Dogleg", "GaussNewton", "LevenbergMarquardt"]

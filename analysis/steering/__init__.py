"""Steering vectors: in-context vectors, steering, vector arithmetic and export."""

from analysis.steering.vector import SteeringVector, VectorError

__all__ = ["SteeringVector", "VectorError"]

"""fcdd: Fully Convolutional Data Description, explainable one-class anomaly detection."""

__version__ = "0.1.0"

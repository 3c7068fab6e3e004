"""Replication of Sakai & Hotta 2024, "Growing Deep Neural Network Considering with Similarity between Neurons"."""
__version__ = "0.1.0"

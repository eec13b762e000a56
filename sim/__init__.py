"""The ATLAS city simulator: device traffic, attacks, ground truth and evaluation."""

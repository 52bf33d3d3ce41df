"""scorer: valid frames -> anomaly scores per sample, by the signed model of each equipment class."""

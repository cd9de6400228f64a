"""Faithfulness metrics, unfaithfulness classifiers and reports."""

"""Training: plain functions that run without Ray (``loop.fit``), and one thin Ray Train wrapper."""

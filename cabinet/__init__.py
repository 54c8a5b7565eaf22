"""cabinet package."""

"""nlls."""

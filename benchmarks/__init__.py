"""Scripts that print performance figures (see the README's performance section)."""

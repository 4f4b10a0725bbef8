"""Data sets: built-in IDX sets, user arrays and image folders, as in-memory uint8 tensors."""

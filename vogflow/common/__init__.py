"""Tools every part uses and none owns: atomic file writes, progress lines, device and seeding, a
background worker."""

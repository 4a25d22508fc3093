"""A photo as the app sees it: decoded upright and safe (images), how much detail each region holds (detail),
and when and where it was taken (whenwhere). Everything here reads a photo; nothing writes anywhere."""

"""How close synthetic images are to real ones: FD/KID/PR, encoders, SSIM, UMAP."""

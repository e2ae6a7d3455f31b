"""Losses: identity, adversarial objectives and GAN regularisers, wavelet, frontal, noisy-label."""

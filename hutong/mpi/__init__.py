"""Identity: master patient index (GB 11643 ID numbers, normalisation, matching, golden persons)."""

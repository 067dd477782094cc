"""CoDA (Gu et al.): cloud KNN sample matching, on-device filtering, gated personalisation."""

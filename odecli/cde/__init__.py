"""`odecli cde`: neural controlled differential equations for irregular, partly missing series."""

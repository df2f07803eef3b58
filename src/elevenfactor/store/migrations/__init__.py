"""Schema migrations, one module each, applied in order by ``elevenfactor migrate``."""

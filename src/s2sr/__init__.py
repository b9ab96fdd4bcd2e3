"""s2sr: super-resolution of Sentinel-2's ten 10 m / 20 m bands to 5 m, as an openEO UDF."""

__version__ = "0.1.0"

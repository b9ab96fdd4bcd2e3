"""The shipped sample scene (``src/s2sr/sample_data``) as the UDF gets it.

Its own module: the evaluation, the int8 export's accuracy check (``quantize``) and the
benchmarks read it, and none of them imports another for it (no import circle).
"""

from pathlib import Path

import numpy as np
import torch


def sample_scene_input() -> np.ndarray:
    """The shipped sample scene as the UDF gets it: ``[10, H, W]`` float32 DN on the 10 m grid,
    the 20 m bands GDAL-cubic upsampled (the process graph's resample_cube_spatial)."""
    import rasterio

    import s2sr

    from ..degradation import cubic_upsample

    data = Path(s2sr.__file__).with_name("sample_data")
    with rasterio.open(data / "s2_10m.tif") as a, rasterio.open(data / "s2_20m.tif") as b:
        b10, b20 = a.read().astype("float32"), b.read().astype("float32")
    b20 = cubic_upsample(torch.from_numpy(b20)[None], 2, border="gdal")[0].numpy()
    return np.ascontiguousarray(np.concatenate([b10, b20]))

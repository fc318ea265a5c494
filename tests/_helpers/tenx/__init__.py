"""Write small folders in the exact 10x Genomics output formats that spatialdata-io 0.7.1 reads.

Used by ``tests/io/test_tenx.py``. Every writer returns a small dataclass holding what was written (counts,
barcodes, genes, positions), so tests can check the readers' output against the ground truth.

The file layouts follow 10x's documentation:

- feature-barcode matrix HDF5 (``filtered_feature_bc_matrix.h5``, ``cell_feature_matrix.h5``): a ``matrix``
  group with ``barcodes``, ``data``, ``indices``, ``indptr``, ``shape`` (features x barcodes, CSC) and a
  ``features`` group (``id``, ``name``, ``feature_type``, ``genome``, ``_all_tag_keys``);
- Space Ranger ``spatial/`` folder: ``tissue_positions_list.csv`` (v1, no header) or ``tissue_positions.csv``
  (v2, header), ``scalefactors_json.json``, ``tissue_hires_image.png``, ``tissue_lowres_image.png``;
- Visium HD: ``feature_slice.h5`` (``metadata_json`` attribute), ``spatial/`` and
  ``binned_outputs/square_002um/{filtered_feature_bc_matrix.h5, spatial/tissue_positions.parquet,
  spatial/scalefactors_json.json}``;
- Xenium: ``experiment.xenium``, ``cells.zarr.zip``, ``cell_feature_matrix.h5``, ``cells.parquet`` and,
  optionally, a post-Xenium H&E (``*_he_image.ome.tif``) with its ``*_he_imagealignment.csv``
  (3 x 3 affine, H&E pixels -> Xenium morphology pixels).

Where the shared real data folder is present (``$SPACRD_DATA_DIR`` or ``<repo>/../shared/data``) the Visium
writer reuses the real V1_Breast_Cancer_Block_A_Section_1 positions, scale factors and lowres image (read at
test time, never copied into the repository) and falls back to a synthetic hexagonal grid otherwise.
"""

from ._common import HER2ST_GENES, VISIUM_REAL_FOLDER, XENIUM_REAL_FOLDER, gene_table, shared_data_dir, write_10x_h5
from .visium import VisiumFixture, write_visium
from .visium_hd import VisiumHDFixture, write_coarse_bins, write_raw_matrix, write_visium_hd
from .xenium import XeniumFixture, write_xenium

__all__ = [
    "HER2ST_GENES",
    "VISIUM_REAL_FOLDER",
    "XENIUM_REAL_FOLDER",
    "VisiumFixture",
    "VisiumHDFixture",
    "XeniumFixture",
    "gene_table",
    "shared_data_dir",
    "write_10x_h5",
    "write_coarse_bins",
    "write_raw_matrix",
    "write_visium",
    "write_visium_hd",
    "write_xenium",
]

"""Default key names shared across the package (one place for every literal key)."""

from __future__ import annotations

#: Key of the table in a :class:`~spatialdata.SpatialData` written by :mod:`spacrd_sc.io`.
TABLE_KEY = "table"
#: Name of the spot-circle shapes element written by :mod:`spacrd_sc.io`.
SPOTS_KEY = "spots"
#: Name of the H&E image element written by :mod:`spacrd_sc.io`.
IMAGE_KEY = "he"
#: ``adata.obs`` column naming the shapes element that a table row annotates.
REGION_KEY = "region"
#: ``adata.obs`` column with the integer index of the circle a table row annotates.
INSTANCE_KEY = "spot_id"
#: ``obsm`` / ``uns`` key of spatial coordinates (squidpy convention).
SPATIAL_KEY = "spatial"
#: ``obs`` column of the section / library id when several sections are concatenated.
LIBRARY_KEY = "section"
#: ``obsm`` key of image features written by :func:`spacrd_sc.tl.extract_uni`.
IMAGE_FEATURES_KEY = "X_uni"
#: Prefix of keys written by :func:`spacrd_sc.tl.cancer_score`.
SCORE_KEY = "spacrd"
#: ``obs`` column with the binary cancer label.
LABEL_KEY = "cancer"
#: ``obs`` column with the pathologist category.
PATHOLOGY_KEY = "pathology"
#: Fewest genes a model may be trained or scored on (``spacrd_sc.settings.min_genes``, default). The gene
#: encoder reads the top principal components of the genes and the gene set is chosen as highly variable genes:
#: both mean nothing on a handful of genes, yet such a model used to train for minutes without a word (a her2st
#: model on the 5 genes a panel shared with it). 50 is below every targeted
#: panel in use (Xenium panels hold 300+ genes) and far below the 3000 genes of the default model.
MIN_GENES = 50
#: Environment variable pointing at the local data folder (the one that holds ``her2st/``).
DATA_DIR_ENV = "SPACRD_DATA_DIR"
#: Column with the class name of each annotation polygon (read by :mod:`spacrd_sc.io`, written by
#: :mod:`spacrd_sc.pp`).
CLASS_COLUMN = "class"
#: Column with each annotation polygon's class colour (``"#rrggbb"``, QuPath's ``classification.color``).
CLASS_COLOR_COLUMN = "class_color"

# ---------------------------------------------------------------------- physical facts
#: Spot diameter (µm) of each platform, by ``uns['spatial'][lib]['metadata']['platform']``: legacy ST spots are
#: 100 µm across (200 µm centre to centre), Visium spots 55 µm (100 µm centre to centre).
SPOT_DIAMETER_UM = {"legacy_st": 100.0, "visium": 55.0}


class Key:
    """Every key the package derives from a user's ``key_added`` or reads by scanpy/squidpy convention (one place,
    no string surgery elsewhere; squidpy's ``Key`` is the model).

    ``cancer_score(..., key_added="spacrd")`` writes ``obs[Key.score("spacrd")]`` (``"spacrd_score"``),
    ``obs[Key.call("spacrd")]`` (``"spacrd_cancer"``), ``obsm[Key.embedding("spacrd")]`` (``"X_spacrd"``) and
    ``uns["spacrd"]``; the spatial graph is ``obsp[Key.obsp.connectivities("spatial")]``.
    """

    class obsp:
        """``obsp`` keys of a squidpy spatial graph."""

        @staticmethod
        def connectivities(neighbors_key: str = SPATIAL_KEY) -> str:
            """Graph adjacency, ``f"{neighbors_key}_connectivities"``."""
            return f"{neighbors_key}_connectivities"

        @staticmethod
        def distances(neighbors_key: str = SPATIAL_KEY) -> str:
            """Graph distances, ``f"{neighbors_key}_distances"``."""
            return f"{neighbors_key}_distances"

    class uns:
        """Keys of scanpy's ``uns['spatial'][library_id]`` entry."""

        spatial = SPATIAL_KEY
        scalefactors = "scalefactors"
        spot_diameter = "spot_diameter_fullres"
        metadata = "metadata"
        images = "images"

    @staticmethod
    def score(key_added: str = SCORE_KEY) -> str:
        """``obs`` column of the cancer likelihood."""
        return f"{key_added}_score"

    @staticmethod
    def call(key_added: str = SCORE_KEY) -> str:
        """``obs`` column of the boolean cancer call."""
        return f"{key_added}_cancer"

    @staticmethod
    def embedding(key_added: str = SCORE_KEY) -> str:
        """``obsm`` key of the fused embedding."""
        return f"X_{key_added}"

    @staticmethod
    def prefix(score_key: str) -> str | None:
        """The ``key_added`` behind a score column (``"spacrd_score"`` → ``"spacrd"``), or ``None``."""
        suffix = "_score"
        return score_key[: -len(suffix)] if score_key.endswith(suffix) and len(score_key) > len(suffix) else None

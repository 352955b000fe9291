from tests.inference.conftest import copy_series, dicom_dir, models_dir, registry, rules  # noqa: F401 (fixtures)

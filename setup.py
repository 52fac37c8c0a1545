"""Package discovery: every ``pipeline.*`` subpackage, and ``configs/`` installed as ``pipeline.configs``.

Everything else is in pyproject.toml; this file exists because pyproject.toml alone cannot both
discover packages and map a top-level folder into the package.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["pipeline", "pipeline.*", "example_data", "example_data.*"]) + ["pipeline.configs"],
    package_dir={"pipeline.configs": "configs"},
)

"""Installs tf_smelu: `pip install -e .` (add `[test]`, `[docs]` or `[examples]` extras).

The distribution is `tf-smelu-repro`; the import package is `tf_smelu`. PyPI's
unrelated `tf-SmeLU` distribution installs an import package of the same name,
so the two cannot be installed side by side.
"""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

# The documentation site (mkdocs.yml): the common choice of small Python
# packages; mkdocstrings reads the docstrings statically, so the build needs
# neither TensorFlow nor a network.
DOCS_REQUIREMENTS = [
    "mkdocs>=1.6",
    "mkdocs-material>=9.5",
    "mkdocstrings[python]>=0.26",
]

setup(
    # Not "tf_smelu": that normalizes to PyPI's unrelated `tf-SmeLU`.
    name="tf-smelu-repro",
    version="0.1.0",
    description=(
        "Smooth activations (SmeLU, generalized SmeLU, RESCU) for Keras/"
        "TensorFlow and tools to measure and reduce irreproducibility of "
        "recommendation models."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_smelu", "tf_smelu.*"]),
    # The results schema is read at run time (`tf_smelu.experiment.results.results_schema`).
    package_data={"tf_smelu.experiment": ["results.schema.json"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.5",
        "tensorflow-datasets>=4.9",
        # tfds' MovieLens builders import it but tfds 4.9.10 does not declare it.
        "importlib_resources>=5",
        "absl-py>=1.0",
        "numpy>=1.23",
        # The replica experiment shows progress bars and writes tradeoff.png.
        "tqdm>=4.60",
        "matplotlib>=3.5",
        # The multi-worker launcher picks free localhost ports.
        "portpicker>=1.5",
        # A resumed run reuses a results.json row only if it matches results.schema.json.
        "jsonschema>=4.18",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            # tf-keras: the registry must also work for Keras 2 users.
            "tf-keras>=2.16,<2.22",
            # tests/test_backends.py runs the activations under Keras' JAX
            # backend (CPU build). PyTorch is not listed: PyPI's Linux wheels
            # are CUDA builds of several GB, and the CPU build needs PyTorch's
            # own index, which setup.py cannot name; the PyTorch tests run
            # when torch is installed and are skipped, with the reason, when
            # it is not.
            'jax[cpu]>=0.10; python_version >= "3.11"',
            "psutil>=5",  # checks that no worker process is left behind
            # Enforces the import layers of `.importlinter` (tests/test_architecture.py).
            "import-linter>=2",
            # Parses examples/kubernetes/*.yaml in tests/test_cluster_managers.py.
            "pyyaml>=6",
            "nbclient>=0.7",
            "nbformat>=5",
            "ipykernel>=6",
            # tests/test_docs.py builds the site strictly.
            *DOCS_REQUIREMENTS,
        ],
        "docs": DOCS_REQUIREMENTS,
        # Everything the examples need is required; notebooks need a kernel.
        "examples": [
            "ipykernel>=6",
            "nbclient>=0.7",
            "nbformat>=5",
        ],
    },
    license="Apache-2.0",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)

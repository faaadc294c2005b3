"""Package metadata comes from settings.ini (the single source); the code lives in lib/reprlab."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
cfg = ConfigParser(delimiters=["="])
cfg.read(here / "settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]
reqs = lambda key: cfg.get(key, "").split()
licenses = {"apache2": "Apache Software License 2.0", "mit": "MIT License"}

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=(here / "README.md").read_text(encoding="utf-8") if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    keywords=cfg["keywords"],
    author=cfg["author"],
    author_email=cfg["author_email"],
    license=licenses.get(cfg["license"], cfg["license"]),
    python_requires=">=" + cfg["min_python"],
    package_dir={"": "lib"},
    packages=setuptools.find_packages(where="lib"),
    include_package_data=True,
    # the embedded demo dataset, so `pip install .` (not only an editable install) can load it offline
    data_files=[("share/reprlab", ["data/cifar10-wang-mini.tar.gz", "data/isbi2012-em.tar.gz", "data/scene-saliency.tar.gz", "data/datasets.json"])],
    install_requires=reqs("requirements"),
    extras_require={k.removesuffix("_requirements"): reqs(k) for k in cfg if k.endswith("_requirements") and k != "requirements"},
    # `reprlab-train` etc. run the same code as bin/ (reprlab.cli), so a pip install has the scripts too
    entry_points={"console_scripts": [f"{name}={target}" for name, target in (e.split("=", 1) for e in reqs("console_scripts"))]},
    zip_safe=False,
)

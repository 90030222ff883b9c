"""Packaging of Vaurien."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "vaurien/__init__.py").read_text())[1]

# Required: gevent (the proxy's event loop) and h11 (a small, pure-Python sans-IO HTTP/1.1
# parser, for --protocol http and --demo), so that every protocol works from a plain install.
#
# Optional extras, each for one reason:
#   http        nothing any more (h11 is required); kept so that existing install lines work
#   http2       h2, the sans-IO HTTP/2 library (and its hpack, hyperframe), for --protocol http2
#   client      requests, for vaurien.client.Client and vaurienctl
#   statsd      statsd, a maintained statsd client, for the [statsd] metrics
#   prometheus  prometheus-client, for GET /metrics in the Prometheus text format
#   tls         cryptography, to make the certificate of --tls-self-signed (loading certificates
#               needs only the standard library's ssl module); the tests make theirs with it too
#   docs        Sphinx (7.4+: parse_text_to_nodes), to build the documentation, and matplotlib,
#               for the benchmark's plot of how costs grow with the connections (--plot)
EXTRAS = {
    "http": [],
    "http2": ["h2>=4.1"],
    "client": ["requests>=2.28"],
    "statsd": ["statsd>=4.0"],
    "prometheus": ["prometheus-client>=0.17"],
    "tls": ["cryptography>=41"],
    "docs": ["sphinx>=7.4", "matplotlib>=3.6"],
}
EXTRAS["test"] = sorted(
    {dep for deps in EXTRAS.values() for dep in deps}
    | {
        "pytest>=7",
        "pytest-timeout>=2.1",
        "hypothesis>=6",
        "redis>=5",
        "pymemcache>=4",
        "PyMySQL>=1.1",
        "psycopg[binary]>=3.1",
        "aiosmtpd>=1.4",
        "grpcio>=1.60",
        "ruff>=0.6",
        "toxiproxy-python>=0.1.1",  # a real Toxiproxy client, driving the Toxiproxy API
        "selenium>=4.11",  # drives Debian's chromium through Debian's chromedriver
    }
)

setup(
    name="vaurien",
    version=VERSION,
    description="A chaos TCP proxy: delays, errors, hangs and dropped connections on demand",
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["vaurien", "vaurien.*"]),
    package_data={"vaurien.dashboard": ["static/*"]},  # the dashboard's page
    install_requires=["gevent>=23.9", "h11>=0.14"],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": ["vaurien = vaurien.cli:main", "vaurienctl = vaurien.ctl:main"],
        "pytest11": ["vaurien = vaurien.pytest_plugin"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Software Development :: Testing",
        "Topic :: System :: Networking",
    ],
)

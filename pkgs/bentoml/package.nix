# BentoML 1.4.8, the release Dynamo v0.2.0's SDK pins (bentoml==1.4.8). The SDK uses it as a
# library (service definitions, bento builds, `bentoml._internal.utils.args`, new in 1.4.8); the
# serving itself is Dynamo's own, on circus. nixpkgs' bentoml of the 25.05 era is an older
# release, and marked broken with that nixpkgs' cattrs.
{
  lib,
  buildPythonPackage,
  fetchPin,
  pins,
  hatchling,
  hatch-vcs,
  a2wsgi,
  aiohttp,
  aiosqlite,
  attrs,
  cattrs,
  click,
  click-option-group,
  cloudpickle,
  fs,
  httpx,
  httpx-ws,
  jinja2,
  numpy,
  nvidia-ml-py,
  opentelemetry-api,
  opentelemetry-instrumentation,
  opentelemetry-instrumentation-aiohttp-client,
  opentelemetry-instrumentation-asgi,
  opentelemetry-sdk,
  opentelemetry-semantic-conventions,
  opentelemetry-util-http,
  packaging,
  pathspec,
  pip-requirements-parser,
  prometheus-client,
  psutil,
  pydantic,
  python-dateutil,
  python-dotenv,
  python-json-logger,
  python-multipart,
  pyyaml,
  questionary,
  rich,
  schema,
  simple-di,
  starlette,
  tomli-w,
  uvicorn,
  watchfiles,
}:
buildPythonPackage {
  pname = "bentoml";
  inherit (pins.bentoml) version;
  pyproject = true;

  # The PyPI sdist: its PKG-INFO carries the version hatch-vcs would read from git.
  src = fetchPin "bentoml";

  build-system = [
    hatchling
    hatch-vcs
  ];

  dependencies = [
    a2wsgi
    aiohttp
    aiosqlite
    attrs
    cattrs
    click
    click-option-group
    cloudpickle
    fs
    httpx
    httpx-ws
    jinja2
    numpy
    nvidia-ml-py
    opentelemetry-api
    opentelemetry-instrumentation
    opentelemetry-instrumentation-aiohttp-client
    opentelemetry-instrumentation-asgi
    opentelemetry-sdk
    opentelemetry-semantic-conventions
    opentelemetry-util-http
    packaging
    pathspec
    pip-requirements-parser
    prometheus-client
    psutil
    pydantic
    python-dateutil
    python-dotenv
    python-json-logger
    python-multipart
    pyyaml
    questionary
    rich
    schema
    simple-di
    starlette
    tomli-w
    uvicorn
    watchfiles
  ];
  # Upstream caps cattrs below 23.2 and pins the OpenTelemetry family; nixpkgs' later bentoml
  # recipes relax the same ones.
  pythonRelaxDeps = [
    "cattrs"
    "nvidia-ml-py"
    "opentelemetry-api"
    "opentelemetry-instrumentation"
    "opentelemetry-instrumentation-aiohttp-client"
    "opentelemetry-instrumentation-asgi"
    "opentelemetry-sdk"
    "opentelemetry-semantic-conventions"
    "opentelemetry-util-http"
  ];
  # kantoku is BentoML's fork of circus and installs the same `circus` package; Dynamo's SDK
  # depends on circus itself, and both in one environment collide. pip ends with circus's files
  # (checked in an ai-dynamo 0.2.0 environment from PyPI: circus/arbiter.py is circus 0.19's),
  # which is what Dynamo's serving runs on; BentoML's own `bentoml serve`, which needs kantoku,
  # is not used.
  pythonRemoveDeps = [ "kantoku" ];

  pythonImportsCheck = [
    "bentoml"
    "bentoml._internal.utils.args"
  ];
  # The test suite needs network and model frameworks.
  doCheck = false;

  meta = {
    description = "BentoML ${pins.bentoml.version}, the serving library Dynamo's SDK builds on";
    homepage = "https://github.com/bentoml/BentoML";
    license = lib.licenses.asl20;
  };
}

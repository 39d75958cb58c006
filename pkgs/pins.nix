# The pins of pins.toml as fetch descriptions. Builtins only, so that it evaluates without
# nixpkgs (the tests evaluate it with plain `nix eval`).
#
#   import ./pins.nix { }                    -> { pins, forSystem, fakeHash }
#   (import ./pins.nix { }).forSystem "aarch64-linux"
#     -> { <name> = { name, kind, version, fetcher, args, fetch, buildHashes, alternativeOf,
#                     unresolved }; }
#
# `fetcher` names the nixpkgs function and `args` are its arguments (fetchurl, fetchFromGitHub,
# dockerTools.pullImage); `fetch` is the fixed-output download itself (url, whether it is
# unpacked, hash). An "unresolved" hash becomes `fakeHash`, with a warning naming the pin and the
# command that records the real value, so Nix reports the true hash on first use.
#
# What no fake value can stand for (an image digest) is listed in `unresolved`, one message each;
# `unresolvedBuild` is then what a fetch of the pin builds: a derivation that fails with those
# messages. Evaluation never stops on an unresolved pin (`nix flake check` evaluates every
# package); only building what uses it does.
{
  pinsFile ? ./pins.toml,
}:
let
  raw = builtins.fromTOML (builtins.readFile pinsFile);

  fakeHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

  resolveHash =
    name: what: command: value:
    if value == "unresolved" then
      builtins.trace
        "warning: pin '${name}' has no ${what} yet; using a fake hash, so Nix will report the real one (then record it with `${command}`)"
        fakeHash
    else
      value;

  sourceHash = name: resolveHash name "hash" "dynix pins lock ${name}";

  required =
    name: entry: key:
    entry.${key} or (throw "pins.toml: pin '${name}' (kind ${entry.kind or "?"}) has no '${key}'");

  baseName = url: builtins.baseNameOf url;

  # A user or password in a URL would be written into world-readable store derivations.
  withoutCredentials =
    name: url:
    if builtins.match "[A-Za-z][A-Za-z0-9+.-]*://[^/]*@.*" url != null then
      throw "pins.toml: pin '${name}': its URL carries credentials; give them to Nix in a netrc file (netrc-file) instead"
    else
      url;

  # Per-kind: what to fetch and which nixpkgs fetcher takes it.
  file =
    name: entry:
    let
      url = withoutCredentials name (required name entry "url");
      hash = sourceHash name (required name entry "hash");
    in
    {
      fetcher = "fetchurl";
      args = { inherit url hash; };
      fetch = {
        inherit url hash;
        name = baseName url;
        unpack = false;
      };
    };

  github =
    name: entry:
    let
      owner = required name entry "owner";
      repo = required name entry "repo";
      # A commit, or a tag where no commit is recorded (the archive of a tag is the same tree).
      rev = entry.rev or entry.tag or (throw "pins.toml: pin '${name}' (kind github) has no 'rev' or 'tag'");
      hash = sourceHash name (required name entry "hash");
    in
    {
      fetcher = "fetchFromGitHub";
      args = { inherit owner repo rev hash; };
      fetch = {
        url = "https://github.com/${owner}/${repo}/archive/${rev}.tar.gz";
        inherit hash;
        name = "source";
        unpack = true;
      };
    };

  oci =
    name: entry: system:
    let
      perSystem =
        (required name entry "systems").${system}
          or (throw "pins.toml: pin '${name}' has no image for ${system}");
      noDigest = "pin '${name}' has no image digest for ${system} yet; record it with `dynix pins lock ${name}` on a machine that can reach ${entry.image}";
      # Only read where something asks for the digest itself; a fetch builds `unresolvedBuild`.
      digest = if perSystem.digest == "unresolved" then throw noDigest else perSystem.digest;
      hash = resolveHash name "hash for ${system}" "nix build, then dynix pins set ${name} --build-hash ${system}=HASH" perSystem.hash;
    in
    {
      fetcher = "dockerTools.pullImage";
      args = {
        imageName = required name entry "image";
        imageDigest = digest;
        # `sha256` (an SRI string is fine there): older pullImage versions take no `hash`.
        sha256 = hash;
        finalImageName = entry.image;
        finalImageTag = required name entry "tag";
        os = "linux";
        arch = perSystem.arch;
      };
      fetch = {
        url = "docker://${entry.image}@${digest}";
        inherit hash;
        name = "${baseName entry.image}-${entry.tag}";
        unpack = false;
      };
      unresolved = if perSystem.digest == "unresolved" then [ noDigest ] else [ ];
    };

  kinds = {
    pypi = name: entry: _system: file name entry;
    url = name: entry: _system: file name entry;
    github = name: entry: _system: github name entry;
    inherit oci;
  };

  buildHashes =
    name: entry:
    builtins.mapAttrs (
      key: resolveHash name "build hash '${key}'" "dynix pins set ${name} --build-hash ${key}=HASH"
    ) (entry.build-hashes or { });

  describe =
    system: name: entry:
    let
      kind = required name entry "kind";
      make = kinds.${kind} or (throw "pins.toml: pin '${name}' has unknown kind '${kind}'");
    in
    {
      inherit name kind;
      version = entry.version or "";
      alternativeOf = entry.alternative-of or null;
      buildHashes = buildHashes name entry;
      unresolved = [ ];
    }
    // make name entry system;

  forSystem = system: builtins.mapAttrs (describe system) raw;

  # The build of a pin whose `unresolved` is not empty: it fails, printing those messages. `shell`
  # is how to start a POSIX shell for `system`: [ runtimeShell ] with nixpkgs, [ busybox "sh" ] in
  # the tests.
  unresolvedBuild =
    { shell, system }:
    pin:
    derivation {
      name = "${pin.fetch.name}-unresolved";
      inherit system;
      builder = builtins.head shell;
      message = builtins.concatStringsSep "\n" pin.unresolved;
      args = builtins.tail shell ++ [
        "-c"
        "printf 'error: %s\\n' \"$message\" >&2; exit 1"
      ];
    };
in
{
  inherit fakeHash forSystem unresolvedBuild;
  # The raw table, as written.
  pins = raw;
  names = builtins.attrNames raw;
}

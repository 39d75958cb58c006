# The parts of the flake that need no nixpkgs, checked with plain Nix: `nix flake check` runs them
# (checks.<system>.pure) and so do the Python tests (tests/integration/test_flake.py).
# Evaluates to { count; failures; } where failures lists { name; expected; got; }.
{
  stack ? import ../../pkgs/stack.nix { },
}:
let
  pinsFor = stack.pins.forSystem;
  names = pkg: map (e: if e ? pin then "pin:${e.pin}" else e.name) (stack.patches.series pkg);
  project = (builtins.fromTOML (builtins.readFile ../../pyproject.toml)).project;
  caps = stack.capabilities;
  # torch.cudaCapabilities: nixpkgs' default list for CUDA 12.8 (cuda-modules/gpus.nix: 6.0 6.1
  # 7.0 7.5 8.0 8.6 8.9 9.0 9.0a 10.0 12.0) intersected with torch's own list.
  torch26Builds = [ "6.0" "7.0" "7.5" "8.0" "8.6" "9.0" ];
  torch27Builds = [ "7.5" "8.0" "8.6" "9.0" "10.0" "12.0" ];

  tests = {
    systems = {
      expr = stack.systems;
      expected = [
        "aarch64-linux"
        "x86_64-linux"
      ];
    };
    platforms = {
      expr = builtins.mapAttrs (_: p: [
        p.ociArch
        p.cudaTarget
      ]) stack.platforms;
      expected = {
        aarch64-linux = [
          "arm64"
          "sbsa-linux"
        ];
        x86_64-linux = [
          "amd64"
          "x86_64-linux"
        ];
      };
    };
    versions = {
      expr = stack.versions;
      expected = {
        dynix = project.version;
        vllm = "0.8.4";
        dynamo = "0.2.0";
        nixl = "0.2.0";
        nats-server = "2.10.24";
        etcd = "3.5.18";
        ngc-pytorch = "25.03-py3";
      };
    };
    cuda = {
      expr = stack.cuda;
      expected = {
        version = "12.8";
        capabilities = [
          "9.0"
          "10.0"
        ];
      };
    };
    # Sources are the same for both systems, but for the image.
    sourcesPerSystem = {
      expr =
        let
          urls = system: builtins.mapAttrs (_: p: p.fetch.url) (removeAttrs (pinsFor system) [ "ngc-pytorch" ]);
        in
        urls "aarch64-linux" == urls "x86_64-linux";
      expected = true;
    };
    vllmSource = {
      expr = (pinsFor "aarch64-linux").vllm.args;
      expected = {
        url = "https://files.pythonhosted.org/packages/e6/d6/9d412cdaa92c3ab6250cef51217d37395b2aa372c6c14f90b1668adbbf63/vllm-0.8.4.tar.gz";
        hash = "sha256-UisT3RbGx3PewMtMQupZFiPQPvlNFtuBKOziYAAX5qw=";
      };
    };
    dynamoSource = {
      expr = (pinsFor "x86_64-linux").dynamo.args;
      expected = {
        owner = "ai-dynamo";
        repo = "dynamo";
        rev = "ca728f6e6b8d526a5d7773a9fc09d9320cee9d37";
        hash = "sha256-3CxtBPpXDchnlFRqOo9ltzdWew+vt02Qd+byNm5sBf8=";
      };
    };
    imageArch = {
      expr = builtins.mapAttrs (_: s: s.arch) stack.pins.pins.ngc-pytorch.systems;
      expected = {
        aarch64-linux = "arm64";
        x86_64-linux = "amd64";
      };
    };
    vllmSeries = {
      expr = names "vllm";
      expected = [
        "pin:dynamo-vllm-patch"
        "0001-requirements-cuda-unpin-numba"
        "0002-use-existing-torch"
        "0003-platforms-look-up-vllm-distribution"
        "0004-pynvml-find-the-nixos-driver-link"
        "0005-setup-pass-nix-cmake-flags"
      ];
    };
    dynamoSeries = {
      expr = names "dynamo";
      expected = [
        "0001-pyproject-unpin-pytest"
        "0002-frontend-listen-on-configured-host"
      ];
    };
    # One pinned build hash per git repository and commit of Dynamo's (carried) Cargo.lock, named
    # by one of its crates, as importCargoLock's outputHashes wants; the bindings' lock has none.
    cargoGitCrates = {
      expr =
        let
          lockPackages = file: (builtins.fromTOML (builtins.readFile file)).package;
          gitCommit = p: builtins.match "git\\+[^#]*#(.*)" (p.source or "");
          commits =
            ps:
            builtins.sort builtins.lessThan (
              builtins.attrNames (
                builtins.listToAttrs (
                  map (p: {
                    name = builtins.head (gitCommit p);
                    value = null;
                  }) (builtins.filter (p: gitCommit p != null) ps)
                )
              )
            );
          workspace = lockPackages ../../pkgs/dynamo-runtime/lock/Cargo.lock;
          keys = builtins.attrNames stack.pins.pins.dynamo.build-hashes;
        in
        {
          all = commits workspace;
          named = commits (builtins.filter (p: builtins.elem "${p.name}-${p.version}" keys) workspace);
          keys = builtins.length keys;
          bindings = commits (lockPackages ../../pkgs/dynamo-runtime/lock/lib/bindings/python/Cargo.lock);
        };
      expected = {
        all = [
          "496a8d2bf8f88e3be4ea27332a209d66e8b404f4"
          "8d7195774a209038ddfbb0d1a5348ed17b387386"
          "aaafc2efc6305c1a79eee632b177d76586df1646"
          "fb7ed75f3901b146aa1ba460baaeed5b494f2e0d"
        ];
        named = [
          "496a8d2bf8f88e3be4ea27332a209d66e8b404f4"
          "8d7195774a209038ddfbb0d1a5348ed17b387386"
          "aaafc2efc6305c1a79eee632b177d76586df1646"
          "fb7ed75f3901b146aa1ba460baaeed5b494f2e0d"
        ];
        keys = 4;
        bindings = [ ];
      };
    };
    # nixpkgs' torch keeps only the capabilities of its own per-CUDA list: with torch 2.6's lists
    # (release/2.6 build_cuda.sh: up to 9.0) GB200's 10.0 is lacking, with torch 2.7's "12.8" list
    # (7.5 8.0 8.6 9.0 10.0 12.0) it is kept.
    torchPlanLacking = {
      expr = caps.torchPlan {
        requested = stack.cuda.capabilities;
        torchBuilds = torch26Builds;
      };
      expected = {
        missing = [ "10.0" ];
        rebuild = true;
      };
    };
    torchPlanLackingNeverRebuilds = {
      expr =
        (builtins.tryEval (
          caps.torchPlan {
            requested = stack.cuda.capabilities;
            torchBuilds = torch26Builds;
            rebuild = "never";
          }
        )).success;
      expected = false;
    };
    torchPlanCovered = {
      expr = caps.torchPlan {
        requested = stack.cuda.capabilities;
        torchBuilds = torch27Builds;
        rebuild = "never";
      };
      expected = {
        missing = [ ];
        rebuild = false;
      };
    };
    torchPlanAlways = {
      expr =
        (caps.torchPlan {
          requested = [ "9.0" ];
          torchBuilds = torch27Builds;
          rebuild = "always";
        }).rebuild;
      expected = true;
    };
    torchPlanPtxIsTheSameArchitecture = {
      expr = caps.missing [ "10.0+PTX" "9.0" ] [ "9.0+PTX" "10.0" ];
      expected = [ ];
    };
    torchPlanRefusesNonsense = {
      expr = map (args: (builtins.tryEval (caps.torchPlan args)).success) [
        {
          requested = [ "9.0" ];
          torchBuilds = torch27Builds;
          rebuild = "sometimes";
        }
        {
          requested = [ ];
          torchBuilds = torch27Builds;
        }
      ];
      expected = [
        false
        false
      ];
    };
    capabilityFormats = {
      expr = [
        (caps.torchArchList stack.cuda.capabilities)
        (caps.cmakeArchitectures stack.cuda.capabilities)
      ];
      expected = [
        "9.0;10.0"
        "90;100"
      ];
    };
    seriesPinsExist = {
      expr = builtins.all (e: !(e ? pin) || stack.pins.pins ? ${e.pin}) (
        builtins.concatMap stack.patches.series [
          "vllm"
          "dynamo"
          "nixl"
        ]
      );
      expected = true;
    };
  };

  failures = builtins.filter (t: t != null) (
    builtins.attrValues (
      builtins.mapAttrs (
        name: t:
        if t.expr == t.expected then
          null
        else
          {
            inherit name;
            inherit (t) expected;
            got = t.expr;
          }
      ) tests
    )
  );
in
{
  count = builtins.length (builtins.attrNames tests);
  inherit failures;
}

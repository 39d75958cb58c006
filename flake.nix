{
  description = "dynix: NVIDIA Dynamo's disaggregated LLM serving stack (Dynamo, patched vLLM, NIXL, nats-server, etcd), built reproducibly for aarch64-linux (GB200) and x86_64-linux";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  # Binary caches of nixpkgs' CUDA builds in nixpkgs' default CUDA configuration (PyTorch,
  # triton, NCCL, cuDNN, ...), which the scope uses for everything but our own packages:
  # nix-community's is filled from nixpkgs' release-cuda.nix; cuda-maintainers' is the CUDA
  # team's older one. Nix asks before using them unless the user trusts them (see README,
  # "CUDA, unfree licences and binary caches").
  nixConfig = {
    extra-substituters = [
      "https://nix-community.cachix.org"
      "https://cuda-maintainers.cachix.org"
    ];
    extra-trusted-public-keys = [
      "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs="
      "cuda-maintainers.cachix.org-1:0dq3bujKpuEPMCX6U4WylrUDZ9JyUG0VpVZa7CNfq5E="
    ];
  };

  outputs =
    { self, nixpkgs }:
    let
      # Builtins only: evaluates without fetching nixpkgs (`nix eval .#lib.versions`).
      stack = import ./pkgs/stack.nix { };

      eachSystem =
        f:
        builtins.listToAttrs (
          map (system: {
            name = system;
            value = f system;
          }) stack.systems
        );

      # Plain nixpkgs (no unfree, no CUDA) plus our scope; CUDA lives inside the scope.
      pkgsFor =
        system:
        import nixpkgs {
          inherit system;
          overlays = [ self.overlays.default ];
        };

      # What dynix's unit tests import (the dev shell adds the integration tests' client).
      testPython =
        pkgs: extra:
        pkgs.python3.withPackages (
          ps:
          [
            ps.click
            ps.tomlkit
            ps.pytest
            ps.pyyaml
          ]
          ++ extra ps
        );
    in
    {
      lib = {
        inherit (stack)
          systems
          platforms
          cuda
          versions
          ;
        # pins.forSystem "aarch64-linux" -> every pinned source as fetcher arguments.
        pins = stack.pins;
        # patches.series "vllm" -> the ordered patch list of a package.
        patches = stack.patches;
      };

      overlays.default = import ./overlays { inherit stack; };

      packages = eachSystem (
        system:
        let
          s = (pkgsFor system).dynix-stack;
        in
        {
          inherit (s)
            nats-server
            etcd
            nixl
            dynamo-runtime
            ai-dynamo
            vllm
            ngc-pytorch
            dynix
            dynamo-arm
            ;
          default = s.dynamo-arm;
        }
      );

      # Not packages: the fixed-output derivation behind every hash of pkgs/pins.toml, by pin and
      # key (`pinFetches.<pin>.hash`, `pinFetches.<pin>.build-hashes.<key>`), which
      # `dynix pins lock --build` builds to record the hashes Nix reports.
      legacyPackages = eachSystem (system: {
        inherit ((pkgsFor system).dynix-stack) pinFetches;
      });

      apps = eachSystem (
        system:
        let
          dynix = {
            type = "app";
            program = "${self.packages.${system}.dynix}/bin/dynix";
          };
        in
        {
          inherit dynix;
          default = dynix;
          # dynix inside the full environment: `nix run .#serve -- serve --graph disagg`.
          serve = {
            type = "app";
            program = "${self.packages.${system}.dynamo-arm}/bin/dynix";
          };
        }
      );

      devShells = eachSystem (
        system:
        let
          pkgs = pkgsFor system;
        in
        {
          default = pkgs.mkShell {
            packages = [
              (testPython pkgs (ps: [ ps.openai ]))
              pkgs.ruff
              pkgs.nixfmt-rfc-style
              pkgs.nix
              pkgs.skopeo
              pkgs.umoci
              pkgs.nats-server
              pkgs.etcd
              pkgs.busybox
            ];
            shellHook = ''
              export PYTHONPATH="$PWD/py''${PYTHONPATH:+:$PYTHONPATH}"
            '';
          };
        }
      );

      checks = eachSystem (
        system:
        let
          pkgs = pkgsFor system;
          pure = import ./tests/nix/pure.nix { };
          src = ./.;
        in
        {
          # The evaluation-only tests (pins, patch series, matrix): a failure stops evaluation.
          pure =
            if pure.failures == [ ] then
              pkgs.runCommand "dynix-pure-tests" { } "echo ${toString pure.count} passed > $out"
            else
              throw "pure Nix tests failed: ${builtins.toJSON pure.failures}";
          dynix = self.packages.${system}.dynix;
          lint = pkgs.runCommand "dynix-lint" { nativeBuildInputs = [ pkgs.ruff ]; } ''
            cd ${src}
            ruff check --no-cache py tests bench
            touch $out
          '';
          unit-tests =
            pkgs.runCommand "dynix-unit-tests"
              {
                nativeBuildInputs = [ (testPython pkgs (_: [ ])) ];
              }
              ''
                cp -r ${src} src && chmod -R u+w src && cd src
                PYTHONPATH=py python -m pytest -q -p no:cacheprovider tests/unit
                touch $out
              '';
        }
      );

      formatter = eachSystem (system: (pkgsFor system).nixfmt-rfc-style);
    };
}

# Adds dynix's packages to nixpkgs under one attribute, `dynix-stack` (a scope: override any
# member with `dynix-stack.overrideScope`).
#
# CUDA and unfree licences stay inside this scope: `pkgsCuda` is nixpkgs instantiated once more
# with CUDA enabled and only NVIDIA's CUDA redistributables allowed as unfree; the GPU parts
# (PyTorch, vLLM, NIXL, UCX) come from it, everything else from the nixpkgs this overlay is
# applied to, whatever its own config says.
{
  stack ? import ../pkgs/stack.nix { },
}:
final: prev:
let
  inherit (final) lib;
  system = final.stdenv.hostPlatform.system;
in
{
  dynix-stack = lib.makeScope final.newScope (self: {
    inherit stack;
    platform = stack.platforms.${system} or (throw "dynix supports ${toString stack.systems}, not ${system}");

    # Every pinned source, described for this system (see pkgs/pins.nix).
    pins = stack.pins.forSystem system;

    # The source of a pin, fetched with the nixpkgs fetcher its kind calls for; for a pin that
    # lacks what no fake hash can stand for (an image digest), a build that fails saying so.
    # Images come from the CUDA package set: the only one, NVIDIA's, has a licence only that set
    # admits (see isCudaRedistributable).
    fetchPin =
      name:
      let
        pin = self.pins.${name} or (throw "no pin named '${name}' in pkgs/pins.toml");
        fetchers = {
          fetchurl = final.fetchurl;
          fetchFromGitHub = final.fetchFromGitHub;
          "dockerTools.pullImage" = self.pkgsCuda.dockerTools.pullImage;
        };
      in
      if pin.unresolved != [ ] then
        stack.pins.unresolvedBuild {
          shell = [ final.runtimeShell ];
          inherit system;
        } pin
      else
        fetchers.${pin.fetcher} pin.args;

    # Every fixed-output derivation whose hash pins.toml records, by pin and key as the file
    # names them: `hash` (for an image: this system's), and `build-hashes.<key>`. `dynix pins
    # lock --build` builds these and records the hashes Nix reports.
    pinFetches =
      let
        buildHashFetches = {
          etcd = builtins.mapAttrs (module: _: self.etcd.${module}.goModules) self.pins.etcd.buildHashes;
          nats-server.vendor = self.nats-server.goModules;
          dynamo = self.dynamo-runtime.gitSources;
        };
      in
      builtins.mapAttrs (
        name: pin:
        {
          hash = if name == "ngc-pytorch" then self.ngc-pytorch else self.fetchPin name;
        }
        // lib.optionalAttrs (pin.buildHashes != { }) {
          build-hashes =
            buildHashFetches.${name}
              or (throw "pinFetches: nothing builds the build hashes of pin '${name}'");
        }
      ) self.pins;

    # The patch series of a package (patches/<pkg>/series), pins fetched.
    patchesFor = stack.patches.resolve self.fetchPin;

    # The CUDA capabilities the stack serves: nixpkgs' own setting when the user made one (newer
    # nixpkgs declares it with default [ ]), else H100 and GB200 (pkgs/stack.nix). vLLM's kernels
    # are built for exactly these; PyTorch and the rest of CUDA nixpkgs are not rebuilt for them.
    cudaCapabilities =
      let
        configured = final.config.cudaCapabilities or [ ];
      in
      if configured != [ ] then configured else stack.cuda.capabilities;

    # nixpkgs with CUDA in its default configuration (no cudaCapabilities): what the CUDA binary
    # caches build (pkgs/top-level/release-cuda.nix: cudaSupport and an unfree predicate, nothing
    # else), so PyTorch, triton, magma, NCCL, UCX, OpenCV ... substitute instead of compiling.
    # The unfree predicate decides what may be built, not how: it changes no derivation.
    pkgsCuda = import final.path {
      inherit system;
      overlays = [ ];
      config = {
        cudaSupport = true;
        allowUnfreePredicate = self.isCudaRedistributable;
      };
    };

    # Whether PyTorch is rebuilt for cudaCapabilities: "if-needed" (only when the cached PyTorch
    # lacks one of them), "never" (then evaluation stops, saying which), or "always".
    torchRebuild = "if-needed";

    # The cached PyTorch's capabilities (torch.cudaCapabilities: what nixpkgs kept of its default
    # list) against the ones the stack serves; see pkgs/cuda-capabilities.nix.
    torchPlan = stack.capabilities.torchPlan {
      requested = self.cudaCapabilities;
      torchBuilds = self.pkgsCuda.python312Packages.torch.cudaCapabilities;
      rebuild = self.torchRebuild;
    };

    # NVIDIA's CUDA, cuDNN, NCCL, ... are unfree; nothing else is allowed to be.
    isCudaRedistributable =
      pkg:
      let
        licenses = lib.toList (pkg.meta.license or [ ]);
        nvidia = [
          "CUDA EULA"
          "cuDNN EULA"
          "cuSPARSELt EULA"
          "cuTENSOR EULA"
          "NVidia OptiX EULA"
          "NVIDIA DLC License"
        ];
      in
      licenses != [ ] && lib.all (l: (l.free or false) || lib.elem (l.shortName or "") nvidia) licenses;

    # One Python for the whole stack: the CUDA package set, with our packages added to it.
    python3 = self.pkgsCuda.python312.override {
      self = self.python3;
      packageOverrides = pyFinal: pyPrev: {
        # The cached PyTorch, or, where it has no kernels for a capability the stack serves,
        # PyTorch built for exactly those (torch's gpuTargets bypasses its own list).
        torch =
          if self.torchPlan.rebuild then
            lib.warn
              "dynix: building PyTorch for CUDA capabilities ${lib.concatStringsSep ", " self.cudaCapabilities} (the cached one lacks ${lib.concatStringsSep ", " self.torchPlan.missing}); this is not in any binary cache and takes hours"
              (pyPrev.torch.override { gpuTargets = self.cudaCapabilities; })
          else
            pyPrev.torch;
        # Replaces nixpkgs' (older, marked broken there): Dynamo's SDK needs 1.4.8.
        bentoml = pyFinal.callPackage ../pkgs/bentoml/package.nix {
          inherit (self) fetchPin pins;
        };
        nixl = pyFinal.callPackage ../pkgs/nixl/package.nix {
          inherit (self) fetchPin patchesFor platform;
          inherit (self.pkgsCuda) cudaPackages ucx abseil-cpp;
        };
        ai-dynamo-runtime = pyFinal.callPackage ../pkgs/dynamo-runtime/python.nix {
          inherit (self) fetchPin pins dynamo-runtime;
          inherit (final.buildPackages) protobuf;
        };
        ai-dynamo = pyFinal.callPackage ../pkgs/ai-dynamo/package.nix {
          inherit (self) fetchPin patchesFor pins dynamo-runtime;
        };
        vllm = pyFinal.callPackage ../pkgs/vllm/package.nix {
          inherit (self) fetchPin patchesFor pins;
          inherit (stack) capabilities;
          inherit (self.pkgsCuda) cudaPackages;
          # Forces the plan: where PyTorch would lack a capability and may not be rebuilt,
          # evaluating vLLM stops with the reason.
          cudaCapabilities = builtins.seq self.torchPlan self.cudaCapabilities;
        };
      };
    };

    nats-server = self.callPackage ../pkgs/nats-server/package.nix { };
    etcd = self.callPackage ../pkgs/etcd/package.nix { };
    dynamo-runtime = self.callPackage ../pkgs/dynamo-runtime/package.nix { };
    nixl = self.python3.pkgs.nixl;
    ai-dynamo-runtime = self.python3.pkgs.ai-dynamo-runtime;
    ai-dynamo = self.python3.pkgs.ai-dynamo;
    vllm = self.python3.pkgs.vllm;
    ngc-pytorch = self.callPackage ../pkgs/ngc-pytorch/package.nix { };
    dynix = self.callPackage ../pkgs/dynix/package.nix { };
    dynamo-arm = self.callPackage ../pkgs/dynamo-arm/package.nix { };
  });
}

# snirouter from this workspace. The check phase runs the whole test suite: unit tests,
# the end-to-end tests (the real binary against the simulated tailscaled, with curl and
# openssl as clients, on loopback inside the build sandbox) and the hostile-input tests.
{
  lib,
  rustPlatform,
  curl,
  openssl,
}:
let
  workspace = (lib.importTOML ../Cargo.toml).workspace.package;
in
rustPlatform.buildRustPackage {
  pname = "snirouter";
  inherit (workspace) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../rustfmt.toml
      ../crates
      ../tests
      # tests/e2e/operate.rs checks the Grafana dashboard's metric names.
      ../docs/grafana-dashboard.json
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [
    "-p"
    "snirouter"
  ];
  # The installed binary has no `demo` command: the simulated tailscaled and the sample
  # backends stay out of it. The tests (which drive the simulator) build with it.
  buildNoDefaultFeatures = true;
  checkNoDefaultFeatures = false;

  # Tests: every workspace crate. Nothing is skipped by name. The one test that cannot do
  # its work here is tests/e2e/nix_eval.rs: it evaluates nix/*.nix with nix-instantiate,
  # which is neither in the sandbox nor in `src` (so that editing Nix files does not
  # rebuild the package); it prints why and passes. `checks.module-eval` in flake.nix
  # evaluates the module with the real nixpkgs lib instead.
  cargoTestFlags = [ "--workspace" ];
  nativeCheckInputs = [
    curl
    openssl
  ];
  preCheck = ''
    export HOME=$TMPDIR
  '';

  meta = {
    description = "TLS-terminating SNI/path router for one tailnet host, with certificates from tailscaled";
    homepage = "https://github.com/snirouter/snirouter";
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "snirouter";
    platforms = lib.platforms.linux;
  };
}

# snirouter-sim-tailscaled: the test kit's simulated tailscaled LocalAPI (CertDomains,
# certificates from a test CA) as a stand-alone program, for the NixOS VM test and for
# trying snirouter without a tailnet. Not for production.
{ snirouter }:
snirouter.overrideAttrs (old: {
  pname = "snirouter-sim-tailscaled";
  cargoBuildFlags = [
    "-p"
    "snirouter-testkit"
    "--bin"
    "snirouter-sim-tailscaled"
  ];
  # The tests already ran in the snirouter build.
  doCheck = false;
  meta = old.meta // {
    description = "Simulated tailscaled LocalAPI from the snirouter test kit";
    mainProgram = "snirouter-sim-tailscaled";
  };
})

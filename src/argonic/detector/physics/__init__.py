"""Particle generation in liquid argon: energy deposits with truth labels.

A small, fast Monte Carlo of what a ProtoDUNE-SP readout sees at the surface:

* cosmic muons (cos^2 zenith, falling energy spectrum, Bethe-Bloch energy loss with
  Landau-like fluctuations and a Bragg rise at the end, multiple scattering, explicit
  delta rays above 1 MeV, Michel electrons from stopping mu+ and ~25% of stopping mu-),
* electromagnetic cascades (electrons and photons: bremsstrahlung, pair production,
  Compton scattering), used for delta rays, Michel electrons, cosmic EM particles and
  beam electrons,
* a ProtoDUNE-SP-like test-beam particle (e+, pi+, p, mu+ of 1-7 GeV/c) with a simple
  hadronic interaction model for pions and protons,
* radiological 39Ar beta decays.

Units: cm, MeV, microseconds; charge in ke- (after recombination).
Everything is vectorised along a particle's path; Python loops run over particles only.

The code lives in one module per part (each imports only those listed before it):
``constants`` (liquid argon and particle constants, vector helpers), ``energy_loss``
(dE/dx, range tables, recombination, charge), ``deposits`` (Deposits, World, path
stepping), ``showers`` (electrons, photons, EM cascade), ``tracks`` (heavy charged
particles, delta rays), ``sources`` (decays, hadrons, cosmic, beam and 39Ar sources).
The public names of all of them are re-exported here.
"""

from argonic.detector.physics.constants import (
    AR39_ACTIVITY,
    AR39_Q,
    BOX_ALPHA,
    BOX_BETA,
    DELTA_TCUT,
    E_FIELD,
    E_SHORT,
    EM_EMAX,
    EM_EMIN,
    EM_PER_MUON,
    I_AR,
    K_BB,
    K_HARD,
    K_SOFT,
    ME,
    MICHEL_EMAX,
    MMU,
    MOLIERE_RADIUS,
    MP,
    MPI,
    MU_CHARGE_RATIO,
    MU_MINUS_DECAY_FRACTION,
    MUON_EC,
    MUON_RATE_HZ_M2,
    RHO,
    STEP,
    STERNHEIMER,
    TAU_MU_MINUS_AR,
    TAU_MU_PLUS,
    W_ION,
    X0,
    box_entry,
    box_exit_distance,
    isotropic,
    rotate_from,
)
from argonic.detector.physics.deposits import (
    Deposits,
    World,
)
from argonic.detector.physics.energy_loss import (
    RangeTable,
    bethe_dedx,
    charge_ke,
    electron_dedx,
    moyal,
    range_table,
    recombination,
    soft_brems_dedx,
)
from argonic.detector.physics.showers import (
    absorb_photons,
    em_cascade,
    photon_attenuation_cm,
    short_electrons,
)
from argonic.detector.physics.sources import (
    BEAM_DIR,
    BEAM_START,
    NUCLEAR_LENGTH,
    ar39_betas,
    beam_particle,
    cosmic_em,
    cosmic_muons,
    hadron,
    michel_energy,
    muon,
    sample_cosmic_muons,
)
from argonic.detector.physics.tracks import (
    TrackEnd,
    heavy_track,
)

__all__ = [
    "RHO",
    "X0",
    "MOLIERE_RADIUS",
    "W_ION",
    "E_FIELD",
    "BOX_ALPHA",
    "BOX_BETA",
    "ME",
    "MMU",
    "MPI",
    "MP",
    "K_BB",
    "I_AR",
    "STERNHEIMER",
    "STEP",
    "DELTA_TCUT",
    "E_SHORT",
    "K_HARD",
    "K_SOFT",
    "MICHEL_EMAX",
    "TAU_MU_PLUS",
    "TAU_MU_MINUS_AR",
    "MU_MINUS_DECAY_FRACTION",
    "MU_CHARGE_RATIO",
    "AR39_Q",
    "AR39_ACTIVITY",
    "MUON_RATE_HZ_M2",
    "MUON_EC",
    "EM_PER_MUON",
    "EM_EMIN",
    "EM_EMAX",
    "isotropic",
    "rotate_from",
    "box_exit_distance",
    "box_entry",
    "bethe_dedx",
    "electron_dedx",
    "RangeTable",
    "range_table",
    "soft_brems_dedx",
    "recombination",
    "charge_ke",
    "moyal",
    "Deposits",
    "World",
    "short_electrons",
    "photon_attenuation_cm",
    "absorb_photons",
    "em_cascade",
    "TrackEnd",
    "heavy_track",
    "michel_energy",
    "muon",
    "NUCLEAR_LENGTH",
    "hadron",
    "sample_cosmic_muons",
    "cosmic_muons",
    "cosmic_em",
    "BEAM_START",
    "BEAM_DIR",
    "beam_particle",
    "ar39_betas",
]

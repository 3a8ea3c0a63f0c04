"""odecli's Hydra plugins: Hydra instantiates launchers and sweepers only from classes
defined in the `hydra_plugins` namespace, and imports every module here when it starts, so
each module only subclasses a class of `odecli.launch`, cheaply (no torch).
`odecli.launch.sweeps.register_plugins()` registers them for editable installs too, whose
`hydra_plugins` folder Hydra's scan does not see."""

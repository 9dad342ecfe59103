"""`train`: a thin TRL backend. `sft` fine-tunes on an exported mix, `grpo` runs GRPO with the
checks as rewards, `common` loads models and configs. Importing this package loads no training
stack; the submodules import TRL when called."""

"""train/: consume CoT Factory exports — SFT and DPO with TRL and PEFT (LoRA / QLoRA / full),
staged / mixed / curriculum plans, Cal-DPO and Dr-DPO, evaluation with draft ablations.

Run a plan:  factory train PLAN.yaml        (needs: pip install 'cot-factory[train]')
"""

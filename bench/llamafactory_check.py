import sys, types, importlib.machinery; _m = types.ModuleType("torchaudio"); _m.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None); sys.modules["torchaudio"] = _m  # LF imports torchaudio for audio plugins only; PyPI torchaudio does not load beside torch 2.13 CPU
import sys, inspect
from llamafactory.data.parser import get_dataset_list
from llamafactory.data import loader
from llamafactory.hparams import DataArguments, ModelArguments
from transformers import Seq2SeqTrainingArguments
d = sys.argv[1]
print(inspect.signature(loader._load_single_dataset))
for name in sys.argv[2:]:
    attr = get_dataset_list([name], d)[0]
    print(attr)
    data_args = DataArguments(dataset_dir=d, dataset=name)
    model_args = ModelArguments(model_name_or_path="none")
    targs = Seq2SeqTrainingArguments(output_dir="/tmp/lfout", report_to=[])
    ds = loader._load_single_dataset(attr, model_args, data_args, targs)
    print(name, ds)
    print(ds[0])

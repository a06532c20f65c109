"""Several models for one result: --compare (every model of the table on the same split) and
NeuMF's pretraining (its towers trained first as models of their own, as the paper does).

In:  the run's settings, the split, and a folder per model (`steps.model_folder`).
Out: --compare: one row per model, printed as a table and written to OUTPUT_DIR/compare.csv;
     pretraining: the trained tower models, whose weights `models.load_pretrained` copies in.
"""
import dataclasses
import os

import files
import model_table
import settings
import steps
import training


def every_model(s, split, log=print):
    """Every model of the table on the same split, each with its validation-chosen defaults and
    epochs -> the rows, in the table's order; prints the table and writes compare.csv."""
    results = []
    for name in model_table.MODELS:
        own = settings.for_model(s, name)
        training.seed_everything(s.seed)
        folder = steps.model_folder(own, name)
        os.makedirs(folder, exist_ok=True)
        pretrained = pretrain_towers(own, split, log) if own.pretrain else None
        results.append(steps.train_and_evaluate(own, split, folder, log,
                                                pretrained=pretrained)[1])
    table, csv = compare_table(results, s.top_k, s.full_ranking_users)
    print(table)
    files.atomic_write(os.path.join(s.output_dir, "compare.csv"),
                       lambda path: files.write_text(path, csv))
    return results


def compare_table(results, top_k, full):
    """The printed table and compare.csv's text of --compare's rows."""
    columns = ["model", "hit_ratio", "ndcg", "best_epoch", "train_seconds"]
    columns += ["full_hit_ratio", "full_ndcg"] if full else []
    lines = [f"{'model':8s} {'HR@' + str(top_k):>8s} {'NDCG@' + str(top_k):>8s} {'epoch':>6s} "
             f"{'train s':>8s}" + (f" {'full HR':>8s} {'full NDCG':>9s}" if full else "")]
    for r in results:
        lines.append(f"{r['model']:8s} {r['hit_ratio']:8.4f} {r['ndcg']:8.4f} "
                     f"{r['best_epoch']:6d} {r['train_seconds']:8.1f}"
                     + (f" {r['full_hit_ratio']:8.4f} {r['full_ndcg']:9.4f}" if full else ""))
    rows = [",".join(str(r.get(c, "")) for c in columns) for r in results]
    return "\n".join(lines), ",".join(columns) + "\n" + "\n".join(rows) + "\n"


def pretrain_towers(s, split, log=print):
    """A model whose towers are models of their own (NeuMF: GMF and MLP) has them trained first,
    with its own sizes and settings so their weights fit -> the tower models, in its order;
    None for a model without such towers."""
    spec = model_table.spec(s.model)
    if not spec.pretrainable:
        return None
    towers = []
    for name in spec.towers:
        log(f"pretraining {name} for {s.model}")
        # the paper: towers with Adam, NeuMF fine-tuned by SGD
        optimizer = "lazy_adam" if s.optimizer == "sgd" else s.optimizer
        tower = dataclasses.replace(s, model=name, resume=False, optimizer=optimizer)
        folder = os.path.join(steps.model_folder(s, s.model), f"pretrain-{name}")
        os.makedirs(folder, exist_ok=True)
        towers.append(steps.train_and_evaluate(tower, split, folder, log)[0])
    return tuple(towers)

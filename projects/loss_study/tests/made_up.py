"""Made-up final-stage results for the report's tests: families, test
mIoU per final seed, and a study JSON of CamVid's format built from them
(no training)."""
from projects.loss_study.loss_study.report import run_key

NAMES = {
    'ce': ('Cross-entropy', 'CE'),
    'arb': ('ARB-Loss', 'ARB batch tau=1'),
    'arb-weights':
    ('ARB + count-driven class weights', 'ARB cumulative tau=0 p=0.5'),
    'class-weights': ('Class-weighted CE', 'CE + weights n^-0.5'),
    'focal': ('Focal', 'Focal gamma=2, alpha n^-0.5'),
    'logit-adjustment': ('Logit adjustment', 'ARB prior tau=1'),
    'ce-tta': ('Test-time logit adjustment of CE', 'CE, test tau=0.5'),
    'blv': ('BLV', 'BLV sigma=0.5'),  # a family the registration lacks
}
CLASSES = ['Road', 'Building', 'Sky', 'Car', 'Pole', 'Bicyclist']
BASE = [40.0, 41.0, 39.0, 40.5, 39.5]  # CE's test mIoU, seeds 100-104
SMALL = [0.1, -0.1, 0.2, -0.2, 0.0]  # a spread that keeps 5 from 0
LARGE = [3.0, -3.0, 2.0, -2.0, 0.0]  # one that makes 0.5 a tie


def shifted(by, noise=SMALL, base=BASE):
    return [b + by + n for b, n in zip(base, noise)]


def finished(miou):
    """A finished run with test (and validation) mIoU ``miou``."""
    summary = dict(
        mIoU=miou,
        mIoU_head=70.0,
        mIoU_body=40.0,
        mIoU_tail=10.0,
        mAcc=50.0,
        aAcc=90.0)
    iou = {c: miou for c in CLASSES}
    return dict(
        status='ok',
        seconds=1.0,
        summary=summary,
        per_class_iou=iou,
        test=dict(summary=summary, per_class_iou=iou))


def add_checks(study, kind, mious):
    """The check runs ``check/<kind>/<family>/d0-s100`` (one-configuration
    families: the family key is the configuration's) with test mIoU
    ``mious[family]``."""
    for fam, miou in mious.items():
        study['runs'][run_key('check', kind, fam, 0, 100)] = finished(miou)


def camvid_study(finals):
    """A CamVid-format study of one-configuration families (no tuning):
    ``finals`` maps a family to its test mIoU per final seed (None: not run
    yet)."""
    counts = [600, 300, 200, 50, 10, 5]
    runs = {
        run_key('final', 'adamw', fam, 0, seed): finished(miou)
        for fam, mious in finals.items()
        for seed, miou in zip(range(100, 105), mious) if miou is not None
    }
    return dict(
        protocol=dict(
            iters=4,
            optimizers=['adamw'],
            tune_seeds=[0, 1],
            final_seeds=list(range(100, 105)),
            data_seeds=[0]),
        machine=dict(cpu='cpu', cores=2, torch='2', mmseg='1.2.2'),
        calls=[],
        planned=dict(tune=0, final=5 * len(finals)),
        complete=False,
        data=dict(
            name='CamVid',
            class_names=CLASSES,
            train_counts=counts,
            split_counts=dict(train=counts, val=counts, test=counts)),
        families=[
            dict(
                key=fam,
                name=NAMES[fam][0],
                losses=[
                    dict(
                        key=fam, name=NAMES[fam][1], shown=f'{fam}()', note='')
                ]) for fam in finals
        ],
        runs=runs)

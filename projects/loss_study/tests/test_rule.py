"""The pre-registered rule (``loss_study.rule``) on hand-made analyses: each
case (3, 4, 5(a), 5(b), an empty U), the price both ways, item 7's checks,
an incomplete final stage; and the report's section for a CamVid study
JSON, partial and complete."""
import pytest

from projects.loss_study.loss_study.report import analyse, render
from projects.loss_study.loss_study.rule import (CHECKS, TABLE_ORDER,
                                                 apply_rule, in_table_order)
from projects.loss_study.loss_study.stats import interval
from .made_up import (BASE, LARGE, NAMES, SMALL, add_checks, camvid_study,
                      shifted)


def row(fam, miou, head=None, aacc=None):
    """A test row as ``report.final_row`` gives it; ``None``: a failed
    run."""
    head = head or [70.0] * len(miou)
    aacc = aacc or [90.0] * len(miou)
    by_pair = {
        f'0-{100 + i}': dict(mIoU=m, mIoU_head=head[i], aAcc=aacc[i])
        for i, m in enumerate(miou) if m is not None
    }
    return dict(
        key=f'{fam}-key',
        name=NAMES[fam][1],
        family_name=NAMES[fam][0],
        shown=f'{fam}()',
        by_pair=by_pair,
        pairs=sorted(by_pair),
        planned=len(miou),
        failed=[
            dict(pair=[0, 100 + i]) for i, m in enumerate(miou) if m is None
        ],
        metrics=dict(mIoU=interval([m for m in miou if m is not None])))


def analysis(**rows):
    rows = {fam.replace('_', '-'): r for fam, r in rows.items()}
    return dict(
        chosen={fam: f'{fam}-key'
                for fam in rows},
        rows=dict(test={
            fam: row(fam, *r)
            for fam, r in rows.items()
        }),
        comparisons=[])


def others(**rows):
    """Every registered family but those given, at CE's level (beaten by
    any row 5 points above CE)."""
    out = {
        f.replace('-', '_'): (shifted(0.0), )
        for f in TABLE_ORDER if f != 'ce-tta'
    }
    out.update(rows)
    return out


def test_case_3_ce_unbeaten_recommends_ce():
    outcome = apply_rule(
        analysis(**others(arb=(shifted(0.5, LARGE), ))), checks={})
    assert outcome['complete'] and outcome['case'] == '3'
    assert outcome['recommended'] == 'ce' and 'ce' in outcome['U']
    assert outcome['price'] is None and outcome['versus_ce'] is None
    first, diffs, arb = outcome['sentences'][:3]
    assert first == ('On CamVid (this study) no loss beat cross-entropy on '
                     'test mIoU with a 95 % interval excluding 0; use '
                     'cross-entropy.')
    assert diffs.startswith('Test mIoU against cross-entropy: ARB-Loss '
                            '(ARB batch tau=1) +0.50 [')
    assert arb == ('ARB-Loss is an option whose gain this study did not '
                   'show.')
    assert outcome['not_run'] == ['ce-tta']


def test_case_4_recommends_the_best_unbeaten_non_arb_row():
    outcome = apply_rule(
        analysis(**others(
            class_weights=(shifted(5.0), ),
            arb=(shifted(4.5, [1.0, -1.0, 0.5, -0.5, 0.0]), ))))
    assert outcome['case'] == '4' and outcome['B'] == 'class-weights'
    assert outcome['U'] == ['arb', 'class-weights']  # table order
    assert outcome['recommended'] == 'class-weights'
    assert outcome['versus_ce']['mean'] == pytest.approx(5.0)
    assert outcome['versus_ce']['low'] > 0
    assert outcome['sentences'][0].startswith(
        'On CamVid (this study) we recommend Class-weighted CE (CE + weights '
        'n^-0.5), `class-weights()`: test mIoU +5.00 [')
    assert outcome['sentences'][1] == ('ARB-Loss (ARB batch tau=1) ties with '
                                       'Class-weighted CE.')
    # Every ordered pair is tested, registered or not: focal loses to
    # class-weighted CE though the registered list has only the reverse.
    assert ('class-weights', 'focal') in [(a, b)
                                          for a, b, _ in outcome['wins']]
    assert ('focal', 'class-weights') not in [(a, b)
                                              for a, b, _ in outcome['wins']]


def test_case_4_names_a_non_arb_tie_as_not_distinguishable():
    outcome = apply_rule(
        analysis(**others(
            focal=(shifted(5.0), ), logit_adjustment=(shifted(4.5, LARGE), ))))
    assert outcome['case'] == '4' and outcome['recommended'] == 'focal'
    assert outcome['sentences'][1] == (
        'Logit adjustment (ARB prior tau=1) is not distinguishable from '
        'Focal on this data.')


def test_case_5a_prefers_the_simpler_unbeaten_loss_to_arb():
    outcome = apply_rule(
        analysis(**others(
            arb=(shifted(5.0), ),
            class_weights=(shifted(4.5, [1.0, -1.0, 0.5, -0.5, 0.0]), ))))
    assert outcome['case'] == '5a' and outcome['B'] == 'arb'
    assert outcome['recommended'] == 'class-weights'
    assert outcome['sentences'][1].startswith(
        'ARB-Loss (ARB batch tau=1) had the highest mean test mIoU, +0.50 [')
    assert outcome['sentences'][1].endswith(
        'over Class-weighted CE (CE + weights n^-0.5), but did not beat it; '
        'we recommend the simpler loss.')


def test_case_5b_recommends_plain_arb_before_arb_with_weights():
    outcome = apply_rule(
        analysis(**others(
            arb_weights=(shifted(5.0), ),
            arb=(shifted(4.5, [1.0, -1.0, 0.5, -0.5, 0.0]), ))))
    assert outcome['case'] == '5b' and outcome['B'] == 'arb-weights'
    assert outcome['U'] == ['arb', 'arb-weights']
    assert outcome['recommended'] == 'arb'
    assert outcome['sentences'][1] == (
        'ARB + count-driven class weights (ARB cumulative tau=0 p=0.5) ties '
        'with ARB-Loss.')
    alone = apply_rule(analysis(**others(arb_weights=(shifted(5.0), ))))
    assert alone['case'] == '5b' and alone['recommended'] == 'arb-weights'


def test_ties_on_the_mean_go_to_the_table_order():
    # focal and class-weighted CE: the same mean, neither beats the other.
    outcome = apply_rule(
        analysis(**others(
            focal=(shifted(5.0, [0.2, -0.2, 0.1, -0.1, 0.0]), ),
            class_weights=(shifted(5.0, [-0.2, 0.2, -0.1, 0.1, 0.0]), ))))
    assert outcome['U'] == ['class-weights', 'focal']
    assert outcome['B'] == 'class-weights' == outcome['recommended']
    assert in_table_order(['blv', 'ce-tta', 'focal', 'ce', 'dice'
                           ]) == ['ce', 'focal', 'ce-tta', 'blv', 'dice']


def test_empty_u_recommends_ce_and_reports_the_cycle():
    """Failed runs leave different pairs to each comparison: CE beats ARB on
    seeds 100-102, ARB beats class-weighted CE on 103-105, class-weighted CE
    beats CE on 106-108."""
    no = [None] * 3
    ce = [50.0, 50.2, 49.8] + no + [40.0, 40.2, 39.8]
    arb = [45.0, 45.1, 44.8] + [50.0, 50.3, 49.9] + no
    cw = no + [45.0, 45.2, 44.9] + [45.0, 45.1, 44.9]
    outcome = apply_rule(
        analysis(ce=(ce, ), arb=(arb, ), class_weights=(cw, )))
    assert outcome['U'] == [] and outcome['B'] is None
    assert outcome['case'] == 'empty U' and outcome['recommended'] == 'ce'
    assert outcome['cycle'] == ['ce', 'arb', 'class-weights']
    assert outcome['sentences'][0] == (
        'On CamVid (this study) every row was beaten by another on test '
        'mIoU, a cycle of wins (Cross-entropy (CE) beats ARB-Loss (ARB '
        'batch tau=1), ARB-Loss (ARB batch tau=1) beats Class-weighted CE '
        '(CE + weights n^-0.5), Class-weighted CE (CE + weights n^-0.5) '
        'beats Cross-entropy (CE)); use cross-entropy.')


def test_the_price_both_ways():
    aacc_cost = shifted(-3.0, SMALL, [90.0] * 5)
    head_cost = shifted(-4.0, SMALL, [70.0] * 5)
    costly = apply_rule(
        analysis(**others(class_weights=(shifted(5.0), head_cost, aacc_cost))))
    price = costly['price']
    assert price['measurable']
    assert price['aAcc']['mean'] == pytest.approx(-3.0)
    assert price['mIoU_head']['mean'] == pytest.approx(-4.0)
    low, high = -price['aAcc']['high'], -price['aAcc']['low']
    assert price['line'] == (
        f'Class-weighted CE costs 3.00 [{low:.2f}, {high:.2f}] points of '
        'pixel accuracy and costs 4.00 '
        f"[{-price['mIoU_head']['high']:.2f}, "
        f"{-price['mIoU_head']['low']:.2f}] points of head mIoU against "
        'cross-entropy.')
    assert costly['sentences'][-1] == price['line']

    free = apply_rule(
        analysis(**others(
            class_weights=(shifted(5.0), shifted(0.3, LARGE, [70.0] * 5),
                           shifted(-0.2, LARGE, [90.0] * 5)))))
    assert not free['price']['measurable']
    assert free['price']['line'].startswith(
        'Class-weighted CE: no measurable price against cross-entropy (test '
        'aAcc -0.20 [')
    # One interval holding 0 is not enough: a gain in head mIoU with a cost
    # in pixel accuracy is a price, said as both.
    mixed = apply_rule(
        analysis(**others(
            class_weights=(shifted(5.0), shifted(2.0, SMALL, [70.0] * 5),
                           shifted(-0.2, LARGE, [90.0] * 5)))))
    assert mixed['price']['measurable']
    assert 'gains 2.00 [' in mixed['price']['line']


def test_item_7_checks_are_inputs_or_placeholders():
    cases = others(class_weights=(shifted(5.0), ))
    unknown = apply_rule(analysis(**cases))
    assert len(unknown['placeholders']) == 2
    assert all('has not decided yet' in p and '--checks' in p
               for p in unknown['placeholders'])
    assert not any(CHECKS['sgd_order_changed'] in s
                   for s in unknown['sentences'])
    given = apply_rule(
        analysis(**cases),
        checks=dict(sgd_order_changed=True, schedule_order_changed=False))
    assert given['placeholders'] == []
    assert given['sentences'][-1] == ('Measured under AdamW; under SGD one '
                                      'seed ordered them differently.')
    assert not any('1000 and 2000' in s for s in given['sentences'])
    with pytest.raises(ValueError, match='sgd_order_changed'):
        apply_rule(analysis(**cases), checks=dict(sgd_changed=True))


def test_no_recommendation_until_every_row_has_its_final_runs():
    rows = others(class_weights=(shifted(5.0), ))
    partial = analysis(**rows)
    del partial['rows']['test']['focal']['by_pair']['0-104']
    partial['rows']['test']['focal']['pairs'].pop()
    outcome = apply_rule(partial)
    assert not outcome['complete'] and 'case' not in outcome
    assert outcome['missing'] == ['focal: 4 of 5 final runs']
    untuned = analysis(**rows)
    untuned['chosen']['ce-tta'] = None
    assert apply_rule(untuned)['missing'] == ['ce-tta: tuning not finished']
    # A family whose tuning runs all failed has no row, and is named.
    untuned['chosen']['ce-tta'] = ''
    assert apply_rule(untuned)['no_configuration'] == ['ce-tta']
    # A failed run is finished: listed, its pair left out.
    failed = analysis(**others(class_weights=(shifted(5.0)[:4] + [None], )))
    assert apply_rule(failed)['complete']


# The report's section, from a study JSON ------------------------------------


def test_the_report_says_no_recommendation_until_the_final_stage_is_done():
    finals = {
        'ce': BASE,
        'arb': shifted(5.0),
        'focal': shifted(0.0),
        'class-weights': shifted(1.0)[:3] + [None, None]
    }
    text = render(camvid_study(finals))
    assert '**The registered rule (adamw)**' in text
    assert ('**Final stage incomplete: no recommendation** '
            '(class-weights: 3 of 5 final runs).') in text
    assert 'we recommend' not in text
    assert 'BLV and Dice were not run (the registration: budget).' in text
    assert 'Not run, not rows of the rule: `arb-weights`, ' \
        '`logit-adjustment`, `ce-tta`.' in text
    # A study on other data has no registered rule.
    other = camvid_study(finals)
    other['data']['name'] = 'generated'
    assert 'registered rule' not in render(other)


def test_the_report_gives_the_rule_outcome_when_complete():
    study = camvid_study(dict(ce=BASE, arb=shifted(5.0), focal=shifted(0.0)))
    text = render(study)
    outcome = apply_rule(analyse(study)['adamw'])
    assert outcome['case'] == '5b'
    assert '* Case 5b: B is an ARB row and every row of U is one.' in text
    for sentence in outcome['sentences']:
        assert f'> {sentence}' in text
    assert '* **Placeholder**, item 7: the SGD check' in text
    # Item 7 from the check runs in the JSON (loss_study.checks; without
    # ARB + weights they are CE and ARB): the SGD runs keep the AdamW
    # seed-100 order (ARB > CE), the half schedule's reverse it. The
    # JSON's own 'checks' is not read: the report recomputes them.
    study['checks'] = dict(
        sgd_order_changed=True, schedule_order_changed=False)
    add_checks(study, 'sgd', dict(ce=30.0, arb=31.0))
    add_checks(study, 'half', dict(ce=30.0, arb=29.0))
    text = render(study)
    assert 'Placeholder' not in text
    assert ('> The order changed between 1000 and 2000 iterations; longer '
            'training may change it again.') in text
    assert 'under SGD' not in text

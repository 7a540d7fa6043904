import { AnnotationsQueryEditor } from '../src/components/AnnotationsQueryEditor';
import { VariableQueryEditor } from '../src/components/VariableQueryEditor';
import { choose, makeDataSource, renderEditor, screen } from './helpers';

describe('VariableQueryEditor', () => {
  it('writes only what each kind of variable needs', async () => {
    const { ds } = makeDataSource();
    const { user, state } = renderEditor(VariableQueryEditor, '', ds);
    await user.click(screen.getByRole('radio', { name: 'Dimensions' }));
    expect(state.last).toEqual({ refId: 'variable', mode: 'variable', variable: 'dimensions' });
    expect(screen.getByRole('status')).toHaveTextContent('Dimensions are listed per event type: choose one.');
    await choose(user, 'Event type', 'click');
    expect(state.last).toEqual({ refId: 'variable', mode: 'variable', variable: 'dimensions', eventType: 'click' });
    await user.click(screen.getByRole('radio', { name: 'Event types' }));
    expect(state.last).toEqual({ refId: 'variable', mode: 'variable', variable: 'eventTypes' });
  });

  it('offers dashboard variables for chained variables', async () => {
    const { ds } = makeDataSource();
    const { user, state } = renderEditor(VariableQueryEditor, { refId: 'variable', mode: 'variable', variable: 'dimensionValues', prefix: '' }, ds);
    await choose(user, 'Dimension', '$dims');
    await choose(user, 'Event type', '$eventType');
    expect(state.last).toEqual({
      refId: 'variable',
      mode: 'variable',
      variable: 'dimensionValues',
      dimension: '$dims',
      eventType: '$eventType',
      prefix: '',
    });
  });
});

describe('AnnotationsQueryEditor', () => {
  it('filters by rule and keeps states in a stable order', async () => {
    const { ds } = makeDataSource();
    const { user, state } = renderEditor(AnnotationsQueryEditor, { refId: 'Anno' }, ds);
    await user.click(screen.getByLabelText('Fired'));
    await user.click(screen.getByLabelText('Resolved'));
    expect(state.last?.states).toEqual([]);
    expect(screen.getByRole('status')).toHaveTextContent('Choose at least one alert state');
    await user.click(screen.getByLabelText('Resolved'));
    await user.click(screen.getByLabelText('Fired'));
    await user.type(screen.getByLabelText('Alert rule'), 'checkout errors');
    expect(state.last).toEqual({
      refId: 'Anno',
      mode: 'annotations',
      rule: 'checkout errors',
      states: ['firing', 'resolved'],
    });
  });
});

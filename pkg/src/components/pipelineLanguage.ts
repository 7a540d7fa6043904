import { CodeEditorSuggestionItem, CodeEditorSuggestionItemKind, Monaco } from '@grafana/ui';

/**
 * The pipeline editor's language: JSON plus the backend's macros. Monaco's own
 * JSON mode would flag every macro as an error (they are not JSON until the
 * backend expands them), and its settings are shared by every editor in
 * Grafana, so the plugin registers a small language of its own instead.
 */
export const PIPELINE_LANGUAGE = 'mongopulse-pipeline';

export function registerPipelineLanguage(monaco: Monaco) {
  if (monaco.languages.getLanguages().some((l: { id: string }) => l.id === PIPELINE_LANGUAGE)) {
    return;
  }
  monaco.languages.register({ id: PIPELINE_LANGUAGE });
  monaco.languages.setMonarchTokensProvider(PIPELINE_LANGUAGE, {
    tokenizer: {
      root: [
        [/\$__(timeFilter|timeGroup|timeFrom|timeTo|interval_ms)\b/, 'keyword'],
        [/\$\{[^}]+\}|\$\w+/, 'variable'],
        [/"(?:[^"\\]|\\.)*"(?=\s*:)/, 'type'],
        [/"(?:[^"\\]|\\.)*"/, 'string'],
        [/-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?/, 'number'],
        [/\b(?:true|false|null)\b/, 'keyword'],
        [/[{}[\]()]/, '@brackets'],
        [/[,:]/, 'delimiter'],
      ],
    },
  });
  monaco.languages.setLanguageConfiguration(PIPELINE_LANGUAGE, {
    brackets: [
      ['{', '}'],
      ['[', ']'],
      ['(', ')'],
    ],
    autoClosingPairs: [
      { open: '{', close: '}' },
      { open: '[', close: ']' },
      { open: '(', close: ')' },
      { open: '"', close: '"', notIn: ['string'] },
    ],
  });
}

/** Completions offered after `$`. */
export function macroSuggestions(): CodeEditorSuggestionItem[] {
  return [
    { label: '$__timeFilter(timestamp)', kind: CodeEditorSuggestionItemKind.Method, detail: '$match body for the range' },
    { label: '$__timeGroup(timestamp)', kind: CodeEditorSuggestionItemKind.Method, detail: 'time bucket of the interval' },
    { label: '$__timeFrom', kind: CodeEditorSuggestionItemKind.Constant, detail: 'start of the range (date)' },
    { label: '$__timeTo', kind: CodeEditorSuggestionItemKind.Constant, detail: 'end of the range (date)' },
    { label: '$__interval_ms', kind: CodeEditorSuggestionItemKind.Constant, detail: 'interval in ms (number)' },
  ];
}

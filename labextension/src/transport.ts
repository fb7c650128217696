import { IAmbientEvent } from './protocol';

/**
 * The one interface between the conversation UI and whatever carries its
 * messages: the sidebar's WebSocket to `ambient/ws` (`NotebookSocket` in
 * connection.ts) or the chat widget's anywidget custom messages
 * (`WidgetTransport` in widget.ts).
 *
 * What comes in is handed to the `Conversation` by each transport's own
 * adapter (`addEvent`, `addToken`, `setStatus`, `refused`, `clear`); what goes
 * out goes through this. Every method says whether the message could be sent
 * now: false means it was not (a closed socket), and the UI says so.
 */
export interface IChatTransport {
  /**
   * Ask for the stored events after `afterSeq`; live ones follow. `tail`: only the
   * newest so many (a fresh view of a long history), where `earlier` can read the rest.
   */
  hello(afterSeq: number, tail?: number): boolean;
  /** Stored events with `afterSeq < seq`, at most `limit`, oldest first (absent: not available). */
  earlier?(afterSeq: number, limit: number): Promise<IAmbientEvent[]>;
  /**
   * A question (`/expert ...` goes to the expert); `clientId` makes a resend idempotent.
   * `cells`: the current source of cells it is about, by the number they ran as.
   */
  chat(text: string, clientId: string, cells?: Record<string, string>): boolean;
  /** Stop the reply being written. */
  stop(): boolean;
  /** A person's decision on a proposed action, bound to the sha256 of the code shown. */
  decide(actionId: string, decision: 'approve' | 'reject', sha256: string): boolean;
}

"""Look and feel: Fusion with a palette that follows the system's light or dark mode, and a few
rules for the parts a photo app styles (sidebar, search field, cards)."""

from __future__ import annotations

from sorce_desktop.gui.qt import Qt, QtGui, QtWidgets

ACCENT = "#2f6fde"


def is_dark(app: QtWidgets.QApplication) -> bool:
    hints = app.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    if scheme is not None and scheme() != Qt.ColorScheme.Unknown:
        return scheme() == Qt.ColorScheme.Dark
    return app.palette().color(QtGui.QPalette.ColorRole.Window).lightness() < 128


def palette(dark: bool) -> QtGui.QPalette:
    P = QtGui.QPalette
    c = QtGui.QColor
    if dark:
        roles = {
            P.ColorRole.Window: c("#1f2022"),
            P.ColorRole.WindowText: c("#e8e8ea"),
            P.ColorRole.Base: c("#18191b"),
            P.ColorRole.AlternateBase: c("#222326"),
            P.ColorRole.Text: c("#e8e8ea"),
            P.ColorRole.Button: c("#2c2d30"),
            P.ColorRole.ButtonText: c("#e8e8ea"),
            P.ColorRole.Highlight: c("#3b7cf0"),
            P.ColorRole.HighlightedText: c("#ffffff"),
            P.ColorRole.ToolTipBase: c("#2c2d30"),
            P.ColorRole.ToolTipText: c("#e8e8ea"),
            P.ColorRole.PlaceholderText: c("#8d8f94"),
            P.ColorRole.Mid: c("#3a3b3f"),
            P.ColorRole.Link: c("#6ea2ff"),
            P.ColorRole.Light: c("#3a3b3f"),
            P.ColorRole.Dark: c("#111214"),
        }
    else:
        roles = {
            P.ColorRole.Window: c("#f4f5f7"),
            P.ColorRole.WindowText: c("#1d1d1f"),
            P.ColorRole.Base: c("#ffffff"),
            P.ColorRole.AlternateBase: c("#f6f7f9"),
            P.ColorRole.Text: c("#1d1d1f"),
            P.ColorRole.Button: c("#ffffff"),
            P.ColorRole.ButtonText: c("#1d1d1f"),
            P.ColorRole.Highlight: c(ACCENT),
            P.ColorRole.HighlightedText: c("#ffffff"),
            P.ColorRole.ToolTipBase: c("#ffffff"),
            P.ColorRole.ToolTipText: c("#1d1d1f"),
            P.ColorRole.PlaceholderText: c("#86868b"),
            P.ColorRole.Mid: c("#c8cacf"),
            P.ColorRole.Link: c(ACCENT),
            P.ColorRole.Light: c("#ffffff"),
            P.ColorRole.Dark: c("#a0a3a8"),
        }
    pal = P()
    for role, color in roles.items():
        pal.setColor(role, color)
    dis = c("#6b6d72") if dark else c("#a5a7ab")
    for role in (P.ColorRole.Text, P.ColorRole.WindowText, P.ColorRole.ButtonText):
        pal.setColor(P.ColorGroup.Disabled, role, dis)
    return pal


def stylesheet(dark: bool) -> str:
    side = "#232427" if dark else "#eceef1"
    border = "#34363a" if dark else "#d9dce1"
    field = "#2a2b2e" if dark else "#ffffff"
    card = "#26272a" if dark else "#ffffff"
    muted = "#8d8f94" if dark else "#6e6e73"
    return f"""
    QWidget#sidebar {{ background: {side}; border-right: 1px solid {border}; }}
    QWidget#sidebar QListWidget {{ background: transparent; }}
    QLabel#sidebarTitle {{ color: {muted}; font-size: 8.5pt; font-weight: 600; letter-spacing: 1px; }}
    QLabel#muted {{ color: {muted}; }}
    QLabel#error {{ color: #d93025; }}
    QWidget#header {{ border-bottom: 1px solid {border}; }}
    QLineEdit#search {{
        background: {field}; border: 1px solid {border}; border-radius: 9px; padding: 6px 10px;
        font-size: 11pt; selection-background-color: {ACCENT};
    }}
    QLineEdit#search:focus {{ border: 2px solid {ACCENT}; padding: 5px 9px; }}
    QFrame#banner {{ background: {"#2c3342" if dark else "#eaf1fd"}; border-bottom: 1px solid {border}; }}
    QLabel#bannerTitle {{ font-weight: 600; }}
    QLabel#bannerStatus {{ font-style: italic; }}
    QFrame#card {{ background: {card}; border: 1px solid {border}; border-radius: 14px; }}
    QLabel#welcomeTitle {{ font-size: 17pt; font-weight: 600; }}
    QLabel#emptyTitle {{ font-size: 15pt; font-weight: 600; }}
    QLabel#detailTitle {{ font-size: 10.5pt; }}
    QPushButton#primary {{
        background: {ACCENT}; color: white; border: none; border-radius: 7px; padding: 6px 20px; font-weight: 600;
    }}
    QPushButton#primary:disabled {{ background: {"#3a4b6a" if dark else "#a9c1ee"}; }}
    QPushButton#linkButton {{ border: none; color: {ACCENT if not dark else "#6ea2ff"}; text-align: left; padding: 0; }}
    QPushButton#linkButton:hover {{ text-decoration: underline; }}
    QStatusBar {{ border-top: 1px solid {border}; }}
    QStatusBar QLabel {{ padding: 0 4px; }}
    QProgressBar {{ border: none; border-radius: 3px; background: {border}; max-height: 6px; }}
    QProgressBar::chunk {{ border-radius: 3px; background: {ACCENT}; }}
    QListView#results {{ background: palette(base); }}
    """


def apply(app: QtWidgets.QApplication) -> None:
    app.setStyle("Fusion")
    dark = is_dark(app)
    app.setPalette(palette(dark))
    app.setStyleSheet(stylesheet(dark))
